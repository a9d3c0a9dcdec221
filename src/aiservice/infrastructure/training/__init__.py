"""Framework trainers for training jobs: pure functions a job's worker process calls.

``trainers.train`` fits one model and writes an artifact the serving runtime of its framework loads;
``catalog.validate`` checks an algorithm and its parameters cheaply, before a job is queued;
``metrics`` scores predictions. No HTTP, no database: the job around them owns both.
"""
