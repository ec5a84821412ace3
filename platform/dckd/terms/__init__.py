"""Distillation terms, one module each (config, own state, part of a step); see ``registry``."""
