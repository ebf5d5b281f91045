"""The model servers (``talkinghead.services``): one folder per stage, each a warm gRPC server.

``motion/`` (LivePortrait), ``lipsync/`` (Wav2Lip), ``restore/`` (GFPGAN): each holds its
server, its engines (a neural one and a classical lite fallback), its networks (``networks/``:
one file per network with its checkpoint key mapping) and the processing around them.
``common/`` is what every server shares: bootstrap, limits, wire formats, audio, faces, and
the engine contract (``common/engine_contract.py``) every engine implements. ``stages.py`` is
the registry of stages: per stage its default port, engines, servicer and serve flags, read by
the CLI, the Celery task, the local process launcher and the bench. A new engine is one
engine file in its stage's folder plus one line there.
"""
