"""Jobs, schedules and sensors, collected here for `definitions.py`."""

from sensors.jobs import alignment_iteration_job, bootstrap_job, warehouse_job
from sensors.schedules import weekly_refresh_schedule
from sensors.sensors import lf_change_sensor, new_prompts_sensor

JOBS = [bootstrap_job, alignment_iteration_job, warehouse_job]
SCHEDULES = [weekly_refresh_schedule]
SENSORS = [lf_change_sensor, new_prompts_sensor]
