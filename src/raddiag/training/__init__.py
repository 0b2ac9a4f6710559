"""raddiag.training"""
