"""raddiag.knowledge"""
