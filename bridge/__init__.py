"""REDCap SMS opt-out bridge: records Twilio opt-outs and opt-ins on matching REDCap records."""

__version__ = "0.1.0"
