from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandError

from runs import vault


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret under a new key (all or nothing), then "
        "set SECRETS_KEY to it. Without --new-key a fresh key is generated."
    )

    def add_arguments(self, parser):
        parser.add_argument("--new-key", default="", help="The new SECRETS_KEY.")

    def handle(self, new_key, **options):
        new_key = new_key or Fernet.generate_key().decode()
        if len(new_key) < 16:
            raise CommandError("The new key must be at least 16 characters.")
        try:
            count = vault.rotate(new_key)
        except Exception as exc:
            raise CommandError(f"Nothing changed: {exc}") from None
        self.stdout.write(f"re-encrypted {count} secret(s).")
        self.stdout.write(f"Now set SECRETS_KEY={new_key} (and restart web and workers).")
