"""perennial.evaluate"""
