"""The engine: where the runtime, images, registries and networks meet."""
