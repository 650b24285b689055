"""python-plexapi, the most used Plex client, drives the Plex double the
way its users do, and every answer is checked against the fixture's
library DB (read with sqlite3) and Preferences.xml.

Run by tests/tests/plexapi.rs, which starts the doubles and passes:
PLEX_URL, PLEX_TOKEN (the server's), PLEX_LIBRARY_DB, PLEX_PREFERENCES,
PLEXTV_USERNAME and PLEXAPI_PIN (the version scripts/lib/setup.sh pins).
Tests run in the order written: the last one unclaims the server.
"""

import os
import sqlite3
import time
import unittest
import xml.etree.ElementTree as ElementTree

import plexapi
from plexapi.audio import Artist, Track
from plexapi.exceptions import BadRequest, NotFound
from plexapi.photo import Photoalbum
from plexapi.server import PlexServer
from plexapi.video import Movie, Show

ENV = os.environ
# Hang guard for what the server does in the background (scans, queues).
WAIT = 60.0

# Section type -> (plexapi class of `all()`, the metadata types under it).
SECTION_KINDS = {
    "movie": (Movie, {"movie": 1}),
    "show": (Show, {"show": 2, "season": 3, "episode": 4}),
    "artist": (Artist, {"artist": 8, "album": 9, "track": 10}),
    "photo": (Photoalbum, {"photo": 13}),
}


def db():
    return sqlite3.connect(f"file:{ENV['PLEX_LIBRARY_DB']}?mode=ro", uri=True)


def rows(sql, *args):
    with db() as conn:
        return conn.execute(sql, args).fetchall()


def titles(section, metadata_type, top_level=False):
    """Sorted titles of a section's live items of a type."""
    sql = (
        "SELECT coalesce(title, '') FROM metadata_items WHERE library_section_id = ? "
        "AND metadata_type = ? AND deleted_at IS NULL"
    )
    if top_level:
        sql += " AND parent_id IS NULL"
    return sorted(t for (t,) in rows(sql, section, metadata_type))


def preferences():
    return ElementTree.parse(ENV["PLEX_PREFERENCES"]).getroot().attrib


def wait_until(what, check):
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}")
        time.sleep(0.1)


class PlexApiAgainstTheDouble(unittest.TestCase):
    plex = None

    @classmethod
    def setUpClass(cls):
        cls.plex = PlexServer(ENV["PLEX_URL"], ENV["PLEX_TOKEN"])

    def idle(self):
        """No section refreshing, no activity, no update queue."""
        sections = self.plex.library.sections()
        return (
            not self.plex.activities
            and not any(s.refreshing for s in self.fresh_sections())
            and all(s.timeline().updateQueueSize == 0 for s in sections)
        )

    def fresh_sections(self):
        self.plex.library._invalidateCachedProperties()
        return self.plex.library.sections()

    def test_00_the_pinned_plexapi(self):
        self.assertEqual(plexapi.VERSION, ENV["PLEXAPI_PIN"])

    def test_01_server_root_and_identity(self):
        plex = self.plex
        identity = plex.identity()
        prefs = preferences()
        self.assertEqual(plex.machineIdentifier, identity.machineIdentifier)
        self.assertEqual(plex.machineIdentifier, prefs["ProcessedMachineIdentifier"])
        self.assertEqual(len(plex.machineIdentifier), 40)
        self.assertEqual(plex.version, identity.version)
        self.assertTrue(identity.claimed)
        self.assertEqual(plex.friendlyName, prefs.get("FriendlyName", ""))
        self.assertIs(plex.myPlex, True)
        self.assertEqual(plex.myPlexSigninState, "ok")
        self.assertEqual(plex.platform, "Linux")
        self.assertIsNotNone(plex.updatedAt)
        self.assertEqual(plex.transcoderActiveVideoSessions, 0)
        self.assertEqual(plex.library.identifier, "com.plexapp.plugins.library")
        self.assertEqual(plex.library.title1, "Plex Library")

    def test_02_sections(self):
        want = rows(
            "SELECT id, name, section_type FROM library_sections "
            "WHERE section_type IN (1, 2, 8, 13) ORDER BY id"
        )
        sections = self.plex.library.sections()
        names = {1: "movie", 2: "show", 8: "artist", 13: "photo"}
        self.assertEqual(
            [(s.key, s.title, s.type) for s in sections],
            [(i, n, names[t]) for i, n, t in want],
        )
        for section in sections:
            paths = rows(
                "SELECT root_path FROM section_locations WHERE library_section_id = ? ORDER BY id",
                section.key,
            )
            self.assertEqual(section.locations, [p for (p,) in paths], section.title)
            self.assertIs(self.plex.library.sectionByID(section.key), section)

    def test_03_all_and_total_view_size_for_every_library_type(self):
        seen = set()
        for section in self.plex.library.sections():
            seen.add(section.type)
            cls, types = SECTION_KINDS[section.type]
            items = section.all()
            self.assertTrue(all(isinstance(i, cls) for i in items), section.title)
            if section.type == "photo":
                # A photo section lists its top-level albums (Directory of
                # type photo); every photo flat through clusterZoomLevel.
                want = titles(section.key, 14, top_level=True)
                top = len(want) + len(titles(section.key, 13, top_level=True))
                self.assertEqual(section.totalViewSize(), top)
                self.assertEqual(section.totalSize, top)
                self.assertEqual(section.totalViewSize(libtype="photoalbum"), len(want))
                self.assertEqual(
                    section.totalViewSize(libtype="photo"), len(titles(section.key, 13))
                )
            else:
                want = titles(section.key, types[section.type])
                self.assertEqual(section.totalViewSize(), len(want), section.title)
                self.assertEqual(section.totalSize, len(want), section.title)
                for libtype, code in types.items():
                    self.assertEqual(
                        section.totalViewSize(libtype=libtype),
                        len(titles(section.key, code)),
                        f"{section.title} {libtype}",
                    )
            self.assertEqual(sorted(i.title for i in items), want, section.title)
            for item in items:
                self.assertEqual(item.librarySectionID, section.key)
        self.assertEqual(seen, set(SECTION_KINDS), "the fixture has every library type")

    def test_04_items_by_rating_key(self):
        music = next(s for s in self.plex.library.sections() if s.type == "artist")
        track = music.searchTracks(maxresults=1)[0]
        again = self.plex.fetchItem(track.ratingKey)
        self.assertIsInstance(again, Track)
        self.assertEqual((again.title, again.parentTitle), (track.title, track.parentTitle))
        self.assertEqual(again.librarySectionID, music.key)
        file = rows(
            "SELECT p.file FROM media_parts p JOIN media_items m ON m.id = p.media_item_id "
            "WHERE m.metadata_item_id = ?",
            track.ratingKey,
        )
        self.assertEqual([p.file for p in again.iterParts()], [f for (f,) in file])
        album = self.plex.fetchItem(track.parentRatingKey)
        self.assertEqual(album.title, track.parentTitle)
        with self.assertRaises(NotFound):
            self.plex.fetchItem(999_999_999)

    def test_05_search_tracks_with_sonic_markers(self):
        music = [s for s in self.plex.library.sections() if s.type == "artist"]
        self.assertTrue(music)
        for section in music:
            tracks = section.searchTracks()
            self.assertEqual(sorted(t.title for t in tracks), titles(section.key, 10))
            analysed = rows(
                "SELECT id FROM metadata_items WHERE library_section_id = ? AND metadata_type = 10 "
                "AND deleted_at IS NULL AND extra_data LIKE '%musicAnalysisVersion%'",
                section.key,
            )
            self.assertTrue(analysed, "the fixture has analysed tracks")
            self.assertEqual(
                sorted(t.ratingKey for t in tracks if t.hasSonicAnalysis),
                sorted(i for (i,) in analysed),
            )
            albums = dict(
                rows(
                    "SELECT t.id, a.title FROM metadata_items t JOIN metadata_items a "
                    "ON a.id = t.parent_id WHERE t.library_section_id = ? AND t.metadata_type = 10",
                    section.key,
                )
            )
            for track in tracks:
                self.assertEqual(track.parentTitle, albums[track.ratingKey])

    def test_06_update_cancel_timeline_and_activities(self):
        # As python-plexapi's tools/plex-bootstraptest.py readies a server:
        # no Butler task and no background analysis after the scans.
        settings = self.plex.settings
        for setting in settings.all():
            if setting.id.startswith("ButlerTask") and setting.type == "bool":
                setting.set(False)
            elif setting.id.endswith("Behavior") and "never" in (setting.enumValues or []):
                setting.set("never")
        settings.save()
        library = self.plex.library
        sections = library.sections()
        before = {s.key: s.totalViewSize() for s in sections}
        scanned = dict(rows("SELECT id, coalesce(scanned_at, 0) FROM library_sections"))

        def all_scanned():
            now = dict(rows("SELECT id, coalesce(scanned_at, 0) FROM library_sections"))
            # Set to the scan's time, whatever the fixture's clock.
            return all(now[s.key] != scanned[s.key] for s in sections)

        library.update()
        wait_until("library.update() to scan every section", all_scanned)
        wait_until("the server to be idle after library.update()", self.idle)
        for section in sections:
            location = section.locations[0]
            section.update(path=location)
            section.update()
            section.cancelUpdate()
        library.update()
        library.cancelUpdate()
        for activity in self.plex.activities:
            self.assertTrue(activity.uuid and activity.type, activity)
        wait_until("the server to be idle after the scans", self.idle)
        for section in sections:
            timeline = section.timeline()
            self.assertEqual(timeline.updateQueueSize, 0)
            self.assertEqual(section.totalViewSize(), before[section.key], section.title)

    def test_07_settings_get_set_save(self):
        settings = self.plex.settings
        self.assertEqual(settings.get("FriendlyName").value, preferences().get("FriendlyName", ""))
        for id, default in [
            ("FSEventLibraryUpdatesEnabled", False),
            ("ScheduledLibraryUpdatesEnabled", False),
            ("GenerateBIFBehavior", "never"),
        ]:
            self.assertEqual(settings.get(id).default, default, id)
        self.assertEqual(
            list(settings.get("GenerateBIFBehavior").enumValues), ["never", "scheduled", "asap"]
        )
        with self.assertRaises(NotFound):
            settings.get("ButlerTaskMusicAnalysis")
        trash = settings.get("autoEmptyTrash")
        new = not trash.value
        trash.set(new)
        settings.get("MusicAnalysisBehavior").set("never")
        settings.save()
        del self.plex.__dict__["settings"]
        self.assertEqual(self.plex.settings.get("autoEmptyTrash").value, new)
        self.assertEqual(self.plex.settings.get("MusicAnalysisBehavior").value, "never")
        self.assertEqual(preferences()["autoEmptyTrash"], "1" if new else "0")
        with self.assertRaises(BadRequest):
            self.plex.settings.get("MusicAnalysisBehavior").set("sometimes")

    def test_08_butler_tasks(self):
        tasks = {t.name: t for t in self.plex.butlerTasks()}
        for name in ["BackupDatabase", "CleanOldBundles", "DeepMediaAnalysis", "MusicAnalysis"]:
            self.assertIn(name, tasks)
        self.assertIs(self.plex.runButlerTask("CleanOldBundles"), self.plex)
        with self.assertRaises(BadRequest):
            self.plex.runButlerTask("<This-task-should-not-exist>")
        # Stopping a task that is not running is 404 on a real server.
        with self.assertRaises(NotFound):
            self.plex.query("/butler/BackupDatabase", method=self.plex._session.delete)

    def test_09_account(self):
        account = self.plex.account()
        self.assertEqual(account.signInState, "ok")
        self.assertIn(ENV["PLEXTV_USERNAME"], account.username)
        self.assertIs(account.subscriptionActive, True)

    def test_10_unclaim(self):
        result = self.plex.unclaim()
        self.assertEqual(result.signInState, "none")
        self.assertNotIn("PlexOnlineToken", preferences())
        self.assertIs(self.plex.identity().claimed, False)


if __name__ == "__main__":
    unittest.main(verbosity=2)
