"""runners/grids"""
