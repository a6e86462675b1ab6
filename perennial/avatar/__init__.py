"""perennial.avatar"""
