"""The lipsync stage: frames and speech -> frames whose mouth moves with the speech
(Wav2Lip, Prajwal et al. 2020; lite: a drawn mouth)."""
