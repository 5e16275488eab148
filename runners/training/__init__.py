"""runners/training"""
