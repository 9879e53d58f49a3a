"""Accounts on SQLite and PostgreSQL: tokens (stored only as hashes),
identities, and who may see private projects."""

from __future__ import annotations

import hashlib
from unittest import mock

from sqlalchemy import String, Text, delete, insert, select

from buildnotify.events import Status
from buildnotify.store import accounts, database, personal
from buildnotify.store.accounts import AccountError
from buildnotify.store.batch import record_batch
from buildnotify.store.schema import alerts, developers, metadata, projects
from tests.support import database_url, per_backend
from tests.test_store import T0, build, delivery


class AccountsTests:
    backend = "sqlite"

    def setUp(self) -> None:
        self.url = database_url(self, self.backend)
        self.engine = database.create(self.url)
        self.addCleanup(self.engine.dispose)
        database.upgrade(self.engine)

    def do(self, function, *args, **kwargs):
        """Run one store function in its own transaction."""
        with self.engine.begin() as conn:
            return function(conn, *args, **kwargs)

    def assertAccountError(self, message: str, function, *args, **kwargs) -> None:
        with self.assertRaises(AccountError) as raised:
            self.do(function, *args, **kwargs)
        self.assertEqual(str(raised.exception), message)

    # -- tokens ------------------------------------------------------------------------

    def test_new_tokens_are_long_random_and_prefixed(self) -> None:
        tokens = {accounts.new_token() for _ in range(50)}
        self.assertEqual(len(tokens), 50)
        for token in tokens:
            self.assertTrue(token.startswith("bn_"))
            self.assertGreaterEqual(len(token), 3 + 43)  # 32 bytes, base64 without padding

    def test_hash_token_is_sha256_hex(self) -> None:
        self.assertEqual(accounts.hash_token("bn_abc"), "sha256:" + hashlib.sha256(b"bn_abc").hexdigest())
        self.assertNotEqual(accounts.hash_token("bn_abc"), accounts.hash_token("bn_abd"))

    def test_an_issued_token_logs_in(self) -> None:
        ada = self.do(accounts.add_developer, "ada")
        token = self.do(accounts.issue_token, "ada")
        self.assertEqual(self.do(accounts.check_token, "ada", token), ada)

    def test_a_wrong_token_does_not(self) -> None:
        self.do(accounts.add_developer, "ada")
        self.do(accounts.add_developer, "bob")
        token = self.do(accounts.issue_token, "ada")
        bobs = self.do(accounts.issue_token, "bob")
        for wrong in (accounts.new_token(), token[:-1], token + "x", token.upper(), "", bobs):
            self.assertIsNone(self.do(accounts.check_token, "ada", wrong), wrong)
        self.assertIsNone(self.do(accounts.check_token, "bob", token))
        self.assertIsNone(self.do(accounts.check_token, "ADA", token))

    def test_a_reissued_token_replaces_the_old_one(self) -> None:
        ada = self.do(accounts.add_developer, "ada")
        old = self.do(accounts.issue_token, "ada")
        new = self.do(accounts.issue_token, "ada")
        self.assertNotEqual(old, new)
        self.assertIsNone(self.do(accounts.check_token, "ada", old))
        self.assertEqual(self.do(accounts.check_token, "ada", new), ada)

    def test_a_developer_without_a_token_cannot_log_in(self) -> None:
        self.do(accounts.add_developer, "ada")
        for token in ("", accounts.new_token(), "sha256:" + "0" * 64):
            self.assertIsNone(self.do(accounts.check_token, "ada", token))

    def test_the_database_holds_no_plaintext_token(self) -> None:
        self.do(accounts.add_developer, "ada", emails=["ada@example.com"])
        token = self.do(accounts.issue_token, "ada")
        secret_part = token.removeprefix("bn_")
        with self.engine.connect() as conn:
            [stored] = conn.execute(select(developers.c.token_hash)).scalars()
            self.assertEqual(stored, accounts.hash_token(token))
            scanned = 0
            for table in metadata.sorted_tables:
                text_columns = [c for c in table.columns if isinstance(c.type, String | Text)]
                for row in conn.execute(select(*text_columns)) if text_columns else ():
                    for value in row:
                        scanned += 1
                        self.assertNotIn(secret_part, value or "", f"token in {table.name}")
        self.assertGreater(scanned, 0)
        file = database.sqlite_file(self.url)
        if file is not None:  # nor anywhere in the SQLite files, in any form
            self.engine.dispose()
            for path in (file, file.with_name(file.name + "-wal")):
                if path.exists():
                    self.assertNotIn(secret_part.encode(), path.read_bytes(), path)

    def test_an_unknown_developer(self) -> None:
        self.assertIsNone(self.do(accounts.check_token, "nobody", accounts.new_token()))
        self.assertAccountError("no developer named 'nobody'", accounts.issue_token, "nobody")
        self.assertAccountError("no developer named 'nobody'", accounts.remove_developer, "nobody")
        self.assertAccountError(
            "no developer named 'nobody'", accounts.add_identity, "nobody", "email", "n@example.com"
        )

    def test_an_unknown_developer_still_costs_a_compare(self) -> None:
        self.do(accounts.add_developer, "tokenless")
        compares = []
        real = accounts.hmac.compare_digest

        def counting(a, b):
            compares.append((a, b))
            return real(a, b)

        with mock.patch.object(accounts.hmac, "compare_digest", counting):
            self.do(accounts.check_token, "nobody", "bn_x")
            self.do(accounts.check_token, "tokenless", "bn_x")
        self.assertEqual(len(compares), 2)
        for a, b in compares:
            self.assertEqual(len(a), len(b))

    # -- developers and identities -------------------------------------------------------

    def test_names_are_unique_and_without_spaces(self) -> None:
        self.do(accounts.add_developer, "ada")
        self.assertAccountError("developer 'ada' exists already", accounts.add_developer, "ada")
        for bad in ("", "a b", "tab\there", " ada"):
            with self.assertRaises(AccountError):
                self.do(accounts.add_developer, bad)
        self.assertEqual([d.name for d in self.do(accounts.list_developers)], ["ada"])

    def test_identities_are_lower_cased_and_belong_to_one_developer(self) -> None:
        self.do(accounts.add_developer, "ada", emails=["Ada@Example.COM"], logins=["AdaL", "adal"])
        self.assertAccountError(
            "email 'ada@example.com' belongs to developer 'ada' already",
            accounts.add_developer,
            "bob",
            emails=["bob@example.com", "ADA@example.com"],
        )
        self.assertAccountError(
            "login 'adal' belongs to developer 'ada' already", accounts.add_developer, "eve", logins=["ADAL"]
        )
        self.assertEqual(
            self.do(accounts.list_developers),
            [("ada", [("email", "ada@example.com"), ("login", "adal")], False)],
        )
        with self.assertRaises(AccountError):
            self.do(accounts.add_developer, "bob", emails=["not-an-email"])
        with self.assertRaises(AccountError):
            self.do(accounts.add_identity, "ada", "phone", "555")

    def test_add_identity(self) -> None:
        self.do(accounts.add_developer, "ada")
        self.do(accounts.add_developer, "bob", logins=["bob"])
        self.assertTrue(self.do(accounts.add_identity, "ada", "email", "ADA@example.com"))
        self.assertFalse(self.do(accounts.add_identity, "ada", "email", "ada@example.com"))
        self.assertAccountError(
            "login 'bob' belongs to developer 'bob' already", accounts.add_identity, "ada", "login", "Bob"
        )
        self.assertEqual(self.do(accounts.developers_for_author, "ada@EXAMPLE.com", None)[0][1], "ada")

    def test_developers_for_author(self) -> None:
        ada = self.do(accounts.add_developer, "ada", emails=["ada@example.com"], logins=["ada"])
        bob = self.do(accounts.add_developer, "bob", emails=["bob@example.com", "b@example.org"])
        find = lambda email, login: self.do(accounts.developers_for_author, email, login)  # noqa: E731
        self.assertEqual(find("Ada@Example.com", None), [(ada, "ada")])
        self.assertEqual(find(None, "ADA"), [(ada, "ada")])
        self.assertEqual(find("ada@example.com", "ada"), [(ada, "ada")])  # once, not twice
        self.assertEqual(find("B@example.org", "ada"), [(ada, "ada"), (bob, "bob")])
        self.assertEqual(find("ada", "ada@example.com"), [])  # kinds are not mixed up
        self.assertEqual(find("carol@example.com", "carol"), [])
        self.assertEqual(find(None, None), [])
        self.assertEqual(find("", ""), [])

    def test_list_developers_tells_whether_a_token_is_set_but_not_the_token(self) -> None:
        self.do(accounts.add_developer, "bob")
        self.do(accounts.add_developer, "ada", logins=["ada"])
        token = self.do(accounts.issue_token, "ada")
        listed = self.do(accounts.list_developers)
        self.assertEqual(listed, [("ada", [("login", "ada")], True), ("bob", [], False)])
        self.assertEqual(listed[0].has_token, True)
        self.assertNotIn(token, repr(listed))
        self.assertNotIn("sha256", repr(listed))

    def test_remove_developer_takes_everything_of_theirs(self) -> None:
        ada = self.do(accounts.add_developer, "ada", emails=["ada@example.com"], logins=["ada"])
        bob = self.do(accounts.add_developer, "bob", emails=["bob@example.com"])
        token = self.do(accounts.issue_token, "ada")
        [recorded] = self.do(record_batch, [delivery(build(1, Status.FAILURE))])
        event_id = recorded.events[0].id
        for developer_id in (ada, bob):
            self.do(accounts.add_member, "acme/widget", "ada" if developer_id == ada else "bob")
            self.do(personal.set_watching, developer_id, "acme/widget", False)
            with self.engine.begin() as conn:
                conn.execute(
                    delete(alerts).where(alerts.c.developer_id == developer_id, alerts.c.event_id == event_id)
                )
                conn.execute(
                    insert(alerts).values(developer_id=developer_id, event_id=event_id, created_at=T0)
                )
        self.do(personal.claim, "acme/widget", "ci", "main", "ada", "mine", T0)
        self.do(personal.claim, "acme/widget", "lint", "main", "bob", None, T0)

        self.do(accounts.remove_developer, "ada")

        self.assertEqual([d.name for d in self.do(accounts.list_developers)], ["bob"])
        self.assertIsNone(self.do(accounts.check_token, "ada", token))
        self.assertEqual(self.do(accounts.developers_for_author, "ada@example.com", "ada"), [])
        self.assertEqual(self.do(accounts.members_of, "acme/widget"), ["bob"])
        self.assertEqual(self.do(personal.settings, ada), {})
        self.assertEqual(self.do(personal.pending_alerts, ada), [])
        self.assertEqual(len(self.do(personal.pending_alerts, bob)), 1)
        self.assertEqual([c["developer"] for c in self.do(personal.claims_for, ["acme/widget"])], ["bob"])
        # The name and the identities are free again.
        self.do(accounts.add_developer, "ada", emails=["ada@example.com"])

    # -- privacy -------------------------------------------------------------------------

    def test_public_and_unknown_projects_are_visible_to_everyone(self) -> None:
        ada = self.do(accounts.add_developer, "ada")
        self.do(record_batch, [delivery(build(1, Status.FAILURE, project="acme/public"))])
        for project in ("acme/public", "acme/unknown"):
            self.assertTrue(self.do(accounts.visible, project, None))
            self.assertTrue(self.do(accounts.visible, project, ada))

    def test_private_projects_are_visible_to_members_only(self) -> None:
        ada = self.do(accounts.add_developer, "ada")
        bob = self.do(accounts.add_developer, "bob")
        self.do(record_batch, [delivery(build(1, Status.FAILURE, project="acme/secret"))])
        self.do(accounts.set_private, "acme/secret", True)
        self.assertTrue(self.do(accounts.add_member, "acme/secret", "ada"))
        self.assertFalse(self.do(accounts.add_member, "acme/secret", "ada"))
        self.assertTrue(self.do(accounts.visible, "acme/secret", ada))
        self.assertFalse(self.do(accounts.visible, "acme/secret", bob))
        self.assertFalse(self.do(accounts.visible, "acme/secret", None))
        self.assertFalse(self.do(accounts.visible, "acme/secret", 999_999))
        self.assertEqual(self.do(accounts.private_projects), {"acme/secret"})
        self.assertEqual(self.do(accounts.memberships, ada), {"acme/secret"})
        self.assertEqual(self.do(accounts.memberships, bob), set())

        self.assertTrue(self.do(accounts.remove_member, "acme/secret", "ada"))
        self.assertFalse(self.do(accounts.remove_member, "acme/secret", "ada"))
        self.assertFalse(self.do(accounts.visible, "acme/secret", ada))

        self.do(accounts.set_private, "acme/secret", False)
        self.assertTrue(self.do(accounts.visible, "acme/secret", None))
        self.assertTrue(self.do(accounts.visible, "acme/secret", bob))
        self.assertEqual(self.do(accounts.private_projects), set())

    def test_a_project_can_be_private_before_its_first_build(self) -> None:
        self.do(accounts.add_developer, "ada")
        self.do(accounts.set_private, "acme/new", True)
        with self.engine.connect() as conn:
            row = conn.execute(select(projects).where(projects.c.name == "acme/new")).one()
        self.assertTrue(row.private)
        self.assertIsNotNone(row.created_at)
        self.assertFalse(self.do(accounts.visible, "acme/new", None))
        # Its first build does not make it public again.
        self.do(record_batch, [delivery(build(1, Status.FAILURE, project="acme/new"))])
        self.assertFalse(self.do(accounts.visible, "acme/new", None))
        self.assertEqual(self.do(accounts.private_projects), {"acme/new"})

    def test_members_and_project_listing(self) -> None:
        for name in ("carol", "ada", "bob"):
            self.do(accounts.add_developer, name)
        self.do(record_batch, [delivery(build(1, Status.SUCCESS, project="acme/widget"))])
        self.do(accounts.set_private, "acme/secret", True)
        for name in ("carol", "ada"):
            self.do(accounts.add_member, "acme/secret", name)
        self.do(accounts.add_member, "acme/later", "bob")  # a project known before any build
        self.assertEqual(self.do(accounts.members_of, "acme/secret"), ["ada", "carol"])
        self.assertEqual(self.do(accounts.members_of, "acme/widget"), [])
        self.assertEqual(
            self.do(accounts.list_projects),
            [
                ("acme/later", False, ["bob"]),
                ("acme/secret", True, ["ada", "carol"]),
                ("acme/widget", False, []),
            ],
        )
        self.assertAccountError("no developer named 'dave'", accounts.add_member, "acme/secret", "dave")
        self.assertAccountError("no developer named 'dave'", accounts.remove_member, "acme/secret", "dave")


per_backend(AccountsTests, globals())
