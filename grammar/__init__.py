"""The route-script grammar (routescript.lark), shipped as package data."""
