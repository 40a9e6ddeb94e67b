# NodeRun now lives in apps.jobs, beside Job and its events (see jobs.0005_noderun).
# Only Django's model state changes: the table graphs_noderun stays where it is.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("graphs", "0003_plain_ordering"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="NodeRun")],
            database_operations=[],
        ),
    ]
