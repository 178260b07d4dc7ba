"""gunicorn's own gevent worker, as a plain Flask app would be deployed (bench/floor/app.py)."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"
worker_connections = 2000
control_socket_disable = True  # as the relay: several instances on one machine would share its path
