"""perennial.learn"""
