"""A tiny JSON service: the shape of many Flask apps behind gunicorn."""
import platform
from importlib.metadata import version

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(message="hello from kiln", flask=version("flask"), python=platform.python_version())


@app.get("/healthz")
def healthz():
    return "ok\n"
