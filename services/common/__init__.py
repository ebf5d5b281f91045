"""What every model server shares: the gRPC bootstrap, health, metrics and limits, the base
servicer (server.py), the engine contract (engine_contract.py) and engine choice (engines.py),
wire formats (wire.py, frames.py), audio, face detection, checkpoint loading."""
