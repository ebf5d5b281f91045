"""What every model server shares: the gRPC bootstrap, health, metrics and limits (server.py),
engine choice, wire formats (wire.py, frames.py), audio, face detection, checkpoint loading."""
