"""The rules' names as the policies write them (SPEC §4), for alerts a person reads."""

from __future__ import annotations

LABELS = {
    "content.politics": "涉政敏感", "content.porn": "色情低俗", "content.gambling": "赌博",
    "content.violence": "暴力恐吓", "content.drugs": "毒品", "content.fraud": "诈骗",
    "content.cult": "邪教迷信", "content.insult": "辱骂攻击", "content.ad": "广告营销",
    "content.solicit": "拉票集赞", "content.red_packet": "红包", "content.confidential": "泄露机密",
    "content.rumor": "谣言", "content.link": "外部链接", "content.pii": "个人信息",
    "content.too_long": "长篇大论", "conduct.quiet_hours": "休息时间发消息",
    "flood.repeat": "刷屏(重复)", "flood.rate": "刷屏(频繁)",
    "deadline.overdue": "未按时回复", "deadline.escalated": "提醒后仍未回复",
    "member.nickname": "未实名", "member.departed": "离职未退群", "member.unauthorized_invite": "擅自拉人",
    "member.impersonation": "冒充群主/管理员",
    "member.external": "外部人员", "group.unregistered": "未备案群", "group.name_format": "群名不规范",
    "group.expired": "临时群到期未解散", "group.idle": "长期不活跃群",
    "sanction.warn": "建议警告", "sanction.mute": "建议禁言", "sanction.remove": "建议移出群聊",
}
SEVERITY_LABELS = {"low": "低", "medium": "中", "high": "高", "critical": "紧急"}


def label(rule: str) -> str:
    return LABELS.get(rule, rule)
