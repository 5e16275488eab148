"""runners/tracking"""
