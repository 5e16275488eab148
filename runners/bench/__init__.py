"""runners/bench"""
