# NodeRun moves here from apps.graphs (graphs.0004): the model state only; the table keeps
# its name, graphs_noderun, and its rows.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0004_profile'),
        ('graphs', '0004_noderun_moves_to_jobs'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='NodeRun',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('node_id', models.CharField(max_length=64)),
                        ('service', models.CharField(max_length=100)),
                        ('queue', models.CharField(max_length=16)),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed'), ('failed', 'Failed'), ('skipped', 'Skipped'), ('cancelled', 'Cancelled')], default='pending', max_length=16)),
                        ('attempt', models.PositiveIntegerField(default=0)),
                        ('max_attempts', models.PositiveIntegerField(default=1)),
                        ('lost_attempts', models.PositiveIntegerField(default=0)),
                        ('round_start', models.PositiveIntegerField(default=0)),
                        ('task_id', models.CharField(blank=True, default='', max_length=200)),
                        ('worker', models.CharField(blank=True, default='', max_length=200)),
                        ('progress', models.FloatField(default=0.0)),
                        ('progress_weight', models.FloatField(default=1.0)),
                        ('dispatched_at', models.DateTimeField(blank=True, null=True)),
                        ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('output', models.JSONField(blank=True, null=True)),
                        ('error', models.JSONField(blank=True, null=True)),
                        ('cache_key', models.CharField(blank=True, db_index=True, default='', max_length=64)),
                        ('cached_from', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='jobs.noderun')),
                        ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='node_runs', to='jobs.job')),
                    ],
                    options={
                        'db_table': 'graphs_noderun',
                        'ordering': ['job_id', 'id'],
                        'indexes': [models.Index(fields=['status', 'heartbeat_at'], name='graphs_node_status_d769ff_idx')],
                        'constraints': [models.UniqueConstraint(fields=('job', 'node_id'), name='noderun_unique_node')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
