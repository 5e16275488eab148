"""runners/executors"""
