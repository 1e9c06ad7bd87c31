"""The local runner's config merging: shared compose/ files plus this environment's addresses."""

import xml.etree.ElementTree as ET

from ops.stack.services import COMPOSE, hadoop_config, kafka_config, merge_hadoop_xml, merge_properties


def props(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_properties_override_replaces_in_place_and_appends_new_keys():
    merged = merge_properties("# c\na=1\nb=2\n", {"b": "3", "c": "4"})
    assert merged == "# c\na=1\nb=3\nc=4\n"


def test_kafka_config_keeps_the_shared_file_and_moves_only_addresses(settings):
    shared = (COMPOSE / "kafka" / "server.properties").read_text()
    merged = props(
        merge_properties(
            shared, kafka_config(settings.replace(kafka_bootstrap="127.0.0.1:19092", kafka_controller_port=19093))
        )
    )
    assert merged["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    # authenticated on both listeners, authorized by ACL, topics made only on purpose
    assert merged["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert merged["allow.everyone.if.no.acl.found"] == "false"
    assert merged["auto.create.topics.enable"] == "false"
    assert merged["super.users"] == "User:questlog-broker;User:questlog-admin"
    assert merged["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert merged["log.dirs"].startswith(settings.home)
    assert merged["process.roles"] == "broker,controller"  # from the shared file


def test_hadoop_xml_override(settings):
    shared = (COMPOSE / "hadoop" / "hdfs-site.xml").read_text()
    merged = ET.fromstring(merge_hadoop_xml(shared, hadoop_config(settings.replace(hdfs_datanode_port=19866))))
    values = {p.findtext("name"): p.findtext("value") for p in merged.findall("property")}
    assert values["dfs.datanode.address"] == "127.0.0.1:19866"
    assert values["dfs.datanode.http.address"] == "127.0.0.1:19864"
    assert values["dfs.replication"] == "1"  # from the shared file
    assert values["fs.defaultFS"] == settings.hdfs_url
