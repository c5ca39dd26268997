"""Stored PDFs in an S3-compatible object store (S3_BUCKET, billing/settings.py): a real S3 server on
127.0.0.1 (moto's, speaking the S3 protocol over HTTP) behind django-storages, as a deployment of
several machines shares one. The worker stores each version there, the API and the hosted page serve
the stored bytes, nothing is public, and a store that is down is retried like any failed render."""

import hashlib
import io
import os
import subprocess
import sys
import uuid

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer
from pypdf import PdfReader

from delivery.models import Document
from tests.invoice_helpers import create_invoice, invoice_url
from tests.live.server import HOST, free_port
from tests.test_delivery_api import run_jobs

pytestmark = pytest.mark.django_db

KEYS = {"access_key": "test-key", "secret_key": "test-secret"}


@pytest.fixture
def s3():
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    endpoint = f"http://{HOST}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-central-1",
        aws_access_key_id=KEYS["access_key"],
        aws_secret_access_key=KEYS["secret_key"],
        config=Config(retries={"max_attempts": 1}),
    )
    bucket = f"invoices-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    try:
        yield {"server": server, "client": client, "bucket": bucket, "endpoint": endpoint, "port": port}
    finally:
        server.stop()


@pytest.fixture
def s3_storage(s3, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": s3["bucket"],
                "location": "billing",
                "endpoint_url": s3["endpoint"],
                "region_name": "eu-central-1",
                "default_acl": None,
                "file_overwrite": True,
                "client_config": Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
                **KEYS,
            },
        },
    }
    return s3


@pytest.fixture
def issued(alice_api, alice_customer):
    invoice = create_invoice(
        alice_api,
        alice_customer,
        lines=[{"description": "Audit <b>&</b>", "quantity": "2", "unit_price": "450.00", "tax_rate": "19"}],
    )
    response = alice_api.post(invoice_url(invoice["id"], "send"), {"email": False}, format="json")
    assert response.status_code == 200, response.data
    return response.data


def test_the_worker_stores_each_version_in_the_bucket_and_the_api_and_hosted_page_serve_it(
    s3_storage, alice_api, issued
):
    run_jobs()
    document = Document.objects.get()
    assert document.status == "stored"
    (listed,) = s3_storage["client"].list_objects_v2(Bucket=s3_storage["bucket"])["Contents"]
    assert listed["Key"] == f"billing/{document.file.name}"
    stored = s3_storage["client"].get_object(Bucket=s3_storage["bucket"], Key=listed["Key"])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == document.sha256
    assert len(stored) == document.size
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(stored)).pages)
    assert issued["number"] in text
    assert "1,071.00" in text  # 900.00 + 19 % tax

    served = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert served.status_code == 200
    assert b"".join(served.streaming_content if served.streaming else [served.content]) == stored
    hosted = alice_api.get(issued["hosted_url"].removeprefix("http://testserver") + "pdf/")
    assert hosted.status_code == 200
    assert b"".join(hosted.streaming_content if hosted.streaming else [hosted.content]) == stored


def test_nothing_in_the_bucket_is_public(s3_storage, issued):
    import urllib.error
    import urllib.request

    run_jobs()
    key = f"billing/{Document.objects.get().file.name}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{s3_storage['endpoint']}/{s3_storage['bucket']}/{key}", timeout=5)  # noqa: S310
    assert refused.value.code == 403
    acl = s3_storage["client"].get_object_acl(Bucket=s3_storage["bucket"], Key=key)
    assert all(grant["Grantee"].get("URI", "").rpartition("/")[2] != "AllUsers" for grant in acl["Grants"])


def test_a_store_that_is_down_is_retried_then_the_version_is_stored_when_it_is_back(
    s3_storage, issued, settings
):
    settings.DELIVERY_RETRY_SCHEDULE = [0, 0, 0, 0, 0]
    s3_storage["server"].stop()
    run_jobs()
    document = Document.objects.get()
    assert document.status == "pending"
    assert document.attempts == 1
    assert document.last_error  # the connection refused, recorded
    s3_storage["server"].start()  # the same port, the same bucket: back
    s3_storage["client"].head_bucket(Bucket=s3_storage["bucket"])
    run_jobs()
    document.refresh_from_db()
    assert (document.status, document.attempts) == ("stored", 2)


def test_s3_bucket_in_the_environment_configures_the_store():
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "S3_BUCKET": "acme-invoices",
        "S3_ENDPOINT_URL": "https://minio.internal:9000",
        "S3_REGION": "eu-central-1",
        "S3_PREFIX": "/pdfs/",
        "S3_ACCESS_KEY_ID": "id",
        "S3_SECRET_ACCESS_KEY": "secret",
    }
    code = (
        "import django; django.setup();"
        "from django.core.files.storage import default_storage as s;"
        "s._setup();"
        "w = s._wrapped;"
        "print(type(w).__module__, type(w).__name__, w.bucket_name, w.location, w.endpoint_url, w.region_name,"
        " w.default_acl, w.file_overwrite)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env | {"DJANGO_SETTINGS_MODULE": "billing.settings"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [
        "storages.backends.s3",
        "S3Storage",
        "acme-invoices",
        "pdfs",
        "https://minio.internal:9000",
        "eu-central-1",
        "None",
        "True",
    ]
