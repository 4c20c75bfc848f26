"""Jobs, schedules and sensors, collected here for `definitions.py`."""

from sensors.annotations import sme_annotations_job, sme_annotations_sensor
from sensors.jobs import alignment_iteration_job, bootstrap_job, warehouse_job
from sensors.schedules import weekly_refresh_schedule
from sensors.sensors import lf_change_sensor, new_prompts_sensor

JOBS = [bootstrap_job, alignment_iteration_job, warehouse_job, sme_annotations_job]
SCHEDULES = [weekly_refresh_schedule]
SENSORS = [lf_change_sensor, new_prompts_sensor, sme_annotations_sensor]
