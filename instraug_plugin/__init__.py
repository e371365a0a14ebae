"""InstrAug: automatic instruction augmentation for multimodal instruction fine-tuning."""

__version__ = "0.1.0"
