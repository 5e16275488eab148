"""runners/store"""
