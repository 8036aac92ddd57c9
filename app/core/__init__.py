"""What every iotdeck process needs: settings, database, models, errors, auth, bus, streams,
logs, metrics, retries."""
