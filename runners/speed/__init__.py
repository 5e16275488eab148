"""runners/speed"""
