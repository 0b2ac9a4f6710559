"""raddiag.models"""
