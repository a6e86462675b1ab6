"""perennial.render"""
