"""perennial.viewer"""
