"""GFPGAN (Wang et al., CVPR 2021), RetinaFace (Deng et al., CVPR 2020) and ParseNet, as our
own PyTorch modules that load the official checkpoints unchanged."""
