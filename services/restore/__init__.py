"""The restore stage: frames -> frames with the face cleaned up, stateless per chunk so that
any number of replicas share a video (GFPGAN, Wang et al. 2021; lite: denoise + sharpen)."""
