"""Wav2Lip's networks (Prajwal et al., ACM MM 2020) and the S3FD face detector (Zhang et al.,
ICCV 2017), as our own PyTorch modules that load the official checkpoints unchanged.

These files hold the networks, their checkpoint key mapping and loaders only; S3FD's input,
decoding and NMS live one folder up in ``s3fd_detect.py``, Wav2Lip's face window in
``face_window.py`` and its audio features in ``mel.py``.
"""
