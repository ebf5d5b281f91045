"""Wav2Lip's networks (Prajwal et al., ACM MM 2020) and the S3FD face detector (Zhang et al.,
ICCV 2017), as our own PyTorch modules that load the official checkpoints unchanged."""
