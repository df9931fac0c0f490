"""Package data: landmark schemes, scheme mappings and the exported FaceRecord JSON Schema."""
