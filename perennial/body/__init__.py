"""perennial.body"""
