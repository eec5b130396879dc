"""An SMTP server for the tests: AUTH required, over STARTTLS (or, with --implicit, TLS from
the first byte), delivering into a Maildir. Used by tests/it/service.rs."""
import argparse
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--maildir", required=True)
p.add_argument("--user", default="backups@school.example")
p.add_argument("--password", default="smtp-secret")
p.add_argument("--implicit", action="store_true")
a = p.parse_args()

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(a.cert, a.key)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == a.user and auth_data.password.decode() == a.password
    return AuthResult(success=ok)


if a.implicit:
    controller = Controller(
        Mailbox(a.maildir),
        hostname="127.0.0.1",
        port=a.port,
        ready_timeout=60,  # the start-up self-test waits this long on a busy machine
        ssl_context=context,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,  # the whole session is TLS already
    )
else:
    controller = Controller(
        Mailbox(a.maildir),
        hostname="127.0.0.1",
        port=a.port,
        ready_timeout=60,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
controller.start()
while True:
    time.sleep(3600)
