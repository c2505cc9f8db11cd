"""Training the adapter: the `Trainer` subclass, its objectives, the feature cache and the guide's plain loop."""
