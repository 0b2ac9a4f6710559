"""raddiag.serving"""
