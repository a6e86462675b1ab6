"""perennial.motion"""
