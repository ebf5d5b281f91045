"""The orchestrator (``talkinghead.orchestrator``): one job from spec to video.

A job spec (jobspec.py) is checked once, then pipeline.py calls the stages in order through
their gRPC clients (stage_clients.py): motion (cached per presenter, motion_cache.py), the
ping-pong schedule to the audio's length (schedule.py), lipsync, restore fanned out over the
replicas (restore_fanout.py), then the compositor. tasks.py and celery_app.py make that a
Celery task with time limits, retries and progress (progress.py).
"""
