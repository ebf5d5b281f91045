"""The model servers (``talkinghead.services``): one folder per stage, each a warm gRPC server.

``motion/`` (LivePortrait), ``lipsync/`` (Wav2Lip), ``restore/`` (GFPGAN): each holds its
server, its engines (a neural one and a classical lite fallback), its networks (``networks/``:
one file per network with its checkpoint key mapping) and the processing around them.
``common/`` is what every server shares: bootstrap, limits, wire formats, audio, faces.
"""
