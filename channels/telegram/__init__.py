"""Telegram (python-telegram-bot 22): client glue over the channel toolkit."""

from channels.telegram.adapter import TelegramChannel, TelegramWebhookChannel, build_channel

__all__ = ["TelegramChannel", "TelegramWebhookChannel", "build_channel"]
