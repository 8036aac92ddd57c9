"""iotdeck: devices publish over MQTT, operators watch, rules alert, commands go back."""
