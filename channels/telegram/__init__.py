"""Telegram (python-telegram-bot 22): client glue over the channel toolkit."""

from gateway.channels.telegram.adapter import TelegramChannel, TelegramWebhookChannel, build_channel

__all__ = ["TelegramChannel", "TelegramWebhookChannel", "build_channel"]
