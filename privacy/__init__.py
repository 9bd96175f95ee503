"""The platform's privacy controls that need its secrets: the per-delivery watermark and
its leak trace (水印, 溯源), and the per-subject keys that make personal data in the log
erasable (密钥销毁). See docs/PRIVACY.md."""
