"""talkinghead: a still face photo, a speech track and a job card -> a talking-head video.

The installed package ``talkinghead`` is assembled from the repository's top-level folders
(pyproject.toml ``package-dir``), so each folder keeps the place the project card gives it:

    protos/talkinghead/v1/  -> talkinghead.v1            the gRPC contract (generated code beside it)
    services/               -> talkinghead.services      the model servers, one folder per stage
    orchestrator/           -> talkinghead.orchestrator  the Celery task and the job pipeline
    compositor/             -> talkinghead.compositor    the news frame and the H.264/AAC encoder
    talkinghead/            -> talkinghead               the command line, the local launcher, assets

After ``make setup`` (an editable install) ``import talkinghead.orchestrator`` works from the
repository root or anywhere else.
"""
