"""Jobs, schedules and sensors, collected here for `definitions.py`."""

from sensors.jobs import alignment_iteration_job, bootstrap_job, warehouse_job

JOBS = [bootstrap_job, alignment_iteration_job, warehouse_job]
SCHEDULES: list = []
SENSORS: list = []
