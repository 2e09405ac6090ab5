"""Worker processes (issue 18, docs/workers.md): a supervisor forks N workers that share the SIP sockets."""
