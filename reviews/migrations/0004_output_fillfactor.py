from django.db import migrations


def set_fillfactor(apps, schema_editor):
    # Room on each page for a row's next version: claims, lease renewals and dataset locks
    # change no indexed column, so PostgreSQL can update those rows in place (HOT) instead of
    # adding an entry to each of the table's indexes. Other databases have no such knob.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE reviews_output SET (fillfactor = 85)")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE reviews_output RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("reviews", "0003_output_lease_unindexed")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
